// Custom metrics shared by the scripts (created once, in the init context).
import { Counter, Rate, Trend } from 'k6/metrics';

// Durable messages (`message` -> `ack`): time from send to the ack, and whether it succeeded.
export const ackLatency = new Trend('ack_latency', true);
export const ackSuccess = new Rate('ack_success');
export const acksReceived = new Counter('acks_received');
export const acksRefused = new Counter('acks_refused'); // tagged with the error code
export const messagesSent = new Counter('messages_sent');

// Deliveries of durable messages (`new-message`) to the connections in the room, counted by seq:
// every seq between the connection's join and the room's final seq is expected exactly once.
export const deliveryLatency = new Trend('delivery_latency', true); // now - data.sentAt
export const deliveryRatio = new Rate('delivery_ratio'); // received / expected, per message
export const deliveriesReceived = new Counter('deliveries_received');
export const deliveriesExpected = new Counter('deliveries_expected');
export const deliveriesMissing = new Counter('deliveries_missing');
export const deliveriesDuplicate = new Counter('deliveries_duplicate');
export const deliveriesOutOfOrder = new Counter('deliveries_out_of_order');
export const roomResets = new Counter('room_resets');

// Connections (k6 itself counts ws_sessions, ws_connecting, ws_session_duration). ws_errors is per session: true when the session had a failed handshake, an
// unexpected close, or an `error` frame from the server.
export const wsErrors = new Rate('ws_errors');
export const wsConnectTime = new Trend('ws_connect_time', true); // socket created -> welcome
export const wsHandshakeFailures = new Counter('ws_handshake_failures');
export const wsUnexpectedCloses = new Counter('ws_unexpected_closes'); // tagged with the code
// Our own close frame was not answered with one (the client saw 1006): RFC 6455 wants an echo.
export const wsCloseNotEchoed = new Counter('ws_close_not_echoed');
export const errorFrames = new Counter('sy_error_frames'); // tagged with the error code
