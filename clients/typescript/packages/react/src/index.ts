/**
 * `@switchyard/react`: React hooks and components for the Switchyard real-time gateway.
 * The TanStack Query helper is in `@switchyard/react/query`.
 *
 * @packageDocumentation
 */
export { SwitchyardProvider, useSwitchyardClient } from './context.js';
export type { SwitchyardProviderProps } from './context.js';
export { useConnection, useOutbox } from './useConnection.js';
export type { ConnectionInfo } from './useConnection.js';
export { useSwitchyardEvent } from './useSwitchyardEvent.js';
export { useRoom } from './useRoom.js';
export type { UseRoomOptions, UseRoomResult } from './useRoom.js';
export type { MessageStatus, RoomMessage, RoomSnapshot, RoomStoreOptions } from './roomStore.js';
export { usePresence } from './usePresence.js';
export type { UsePresenceOptions, UsePresenceResult } from './usePresence.js';
export { describeTyping, useTyping } from './useTyping.js';
export type { Typist, UseTypingResult } from './useTyping.js';
export type { TypingOptions, TypingUser } from './typingStore.js';
export { useCursors } from './useCursors.js';
export type { NamedCursor, UseCursorsResult } from './useCursors.js';
export type { CursorOptions, CursorPosition } from './cursorStore.js';
export { useRoomMembership } from './membership.js';
export type { RoomMode } from './membership.js';
export { ConnectionIndicator, OfflineBanner } from './components.js';
export type {
  ConnectionIndicatorProps,
  ConnectionIndicatorRenderInfo,
  OfflineBannerProps,
  OfflineBannerRenderInfo,
} from './components.js';
