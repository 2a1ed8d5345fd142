// ESM entry: the same classes as the CommonJS build (one implementation).
import sdk from './index.cjs';

export const {
  Tilemore, FORMATS, TilemoreError, InputError, UnsupportedFormatError, AuthenticationError,
  PermissionDeniedError, NotFoundError, InsufficientCreditsError, InvalidRequestError,
  ConflictError, ServerError, ConnectionFailed, TaskFailedError, TaskCanceledError,
  WebhookSignatureError, webhooks,
} = sdk;
export default Tilemore;
