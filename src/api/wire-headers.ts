/**
 * The header (gRPC metadata) names of Keybroker's wire contract, shared by the server's two
 * transports and by the client in client/, so the two sides cannot drift apart.
 */

/** The calling application's broker-issued key. */
export const CALLER_KEY_HEADER = "x-keybroker-key";
/** The user's access token, as `Bearer <token>`. */
export const AUTHORIZATION_HEADER = "authorization";
/** A DPoP proof (RFC 9449) for a sender-constrained access token: one compact JWS per call. */
export const DPOP_HEADER = "dpop";
/** Random id of the call, sent back on every answer so callers can quote it to ops. */
export const REQUEST_ID_HEADER = "x-request-id";
/** gRPC's trailer carrying a serialized google.rpc.Status with structured error details. */
export const STATUS_DETAILS_HEADER = "grpc-status-details-bin";
/** W3C Trace Context: the main app's trace, continued by the broker's spans when tracing is on. */
export const TRACEPARENT_HEADER = "traceparent";
