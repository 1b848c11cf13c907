// aigateway client for Node.js: see README.md.
export { ChatStream, GatewayClient, VERSION, createGatewayClient } from './client.js';
export { fromOpenAIChatCompletion, fromOpenAIChatStream, toOpenAIChatRequest } from './convert.js';
export {
  FallbackError,
  GatewayError,
  GatewayStreamError,
  GatewayTimeoutError,
  GatewayUnavailableError,
} from './errors.js';
export { GatewayProcess, startGateway } from './lifecycle.js';
