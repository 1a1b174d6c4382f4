import { SwitchyardProvider } from '@switchyard/react';
import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';
import { App } from './App.js';
import './demo.css';
import { client } from './session.js';

createRoot(document.getElementById('root')!).render(
  <StrictMode>
    <SwitchyardProvider client={client}>
      <App />
    </SwitchyardProvider>
  </StrictMode>,
);
