import { SwitchyardClient, type SwitchyardClientOptions } from '@switchyard/client';
import { createContext, useContext, useEffect, useState, type ReactNode } from 'react';

const SwitchyardContext = createContext<SwitchyardClient | null>(null);
SwitchyardContext.displayName = 'SwitchyardContext';

interface ProviderBase {
  /**
   * Call `client.connect()` on mount. Default `true`. A client the provider created is also
   * disconnected on unmount; a client passed in is left to its owner.
   */
  autoConnect?: boolean;
  children?: ReactNode;
}

/** Props of {@link SwitchyardProvider}: either a `client`, or the `options` to create one. */
export type SwitchyardProviderProps =
  | (ProviderBase & {
      /** A client you created (and own: the provider never disconnects it). */
      client: SwitchyardClient;
      options?: never;
    })
  | (ProviderBase & {
      /**
       * Options of the client the provider creates, once, on first render: later changes are
       * ignored (give the provider a `key` to start over with new options).
       */
      options: SwitchyardClientOptions;
      client?: never;
    });

/**
 * Makes a {@link SwitchyardClient} available to the hooks below it.
 *
 * @example
 * ```tsx
 * <SwitchyardProvider options={{ url: 'wss://rt.example.com/ws', token: fetchToken }}>
 *   <App />
 * </SwitchyardProvider>
 * ```
 */
export function SwitchyardProvider(props: SwitchyardProviderProps): ReactNode {
  const { autoConnect = true, children } = props;
  // Created once; the constructor has no side effects, so StrictMode's double render is harmless.
  const [owned] = useState(() => (props.client ? null : new SwitchyardClient(props.options!)));
  const client = props.client ?? owned!;

  useEffect(() => {
    if (!autoConnect) return undefined;
    client.connect();
    if (client !== owned) return undefined;
    // StrictMode runs this cleanup and the effect again at once: the client opens no socket in
    // between (it is still fetching the token), so that costs nothing.
    return () => client.disconnect();
  }, [client, owned, autoConnect]);

  return <SwitchyardContext.Provider value={client}>{children}</SwitchyardContext.Provider>;
}

/** The client of the nearest {@link SwitchyardProvider}. Throws outside of one. */
export function useSwitchyardClient(): SwitchyardClient {
  const client = useContext(SwitchyardContext);
  if (!client) {
    throw new Error('useSwitchyardClient: no <SwitchyardProvider> above this component');
  }
  return client;
}
