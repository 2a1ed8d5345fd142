// ESM entry: the same classes as the CommonJS build (one implementation).
import sdk from './index.cjs';

export const {
  Tilemore, FORMATS, webhooks, TilemoreError, InputError, UnsupportedFormatError,
  AuthenticationError, PermissionDeniedError, NotFoundError, InsufficientCreditsError,
  InvalidRequestError, ConflictError, ResultExpiredError, RateLimitError, ServerError,
  ConnectionFailed, TaskFailedError, TaskCanceledError, WaitTimeout, WebhookSignatureError,
} = sdk;
export default Tilemore;
