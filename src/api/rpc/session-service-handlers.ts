import { isBrokerError } from "../../errors.js";
import type { SessionService } from "../../gen/keybroker/v1/sessions_pb.js";
import type { SessionService as Sessions } from "../../sessions/session-service.js";
import type { FormPostAnswer, FormPostRoute } from "../transport/form-post-route.js";
import type { ServiceHandlers } from "../transport/handlers.js";
import type { UserCallGuard } from "./call-guard.js";

/** The back-channel logout endpoint's path on the Connect port. */
export const BACKCHANNEL_LOGOUT_PATH = "/oidc/backchannel-logout";

/** Thin handlers: authorize, delegate, convert. Logic lives in sessions/. */
export function createSessionServiceHandlers(deps: {
  guard: UserCallGuard;
  sessions: Sessions;
}): ServiceHandlers<typeof SessionService> {
  const { guard, sessions } = deps;
  return {
    async endSession(request, ctx) {
      // The main app forwards what the issuer signed; it acts for no user, so no user token.
      const caller = await guard.authorizeCaller(ctx, "session:end");
      await sessions.endWithLogoutToken(request.logoutToken, "rpc", {
        requestId: ctx.requestId,
        callerKeyId: caller.keyId,
      });
      return {};
    },
    async endOwnSessions(_request, ctx) {
      const { caller, user } = await guard.authorize(ctx, "session:end");
      await sessions.endOwnSessions(user, { requestId: ctx.requestId, callerKeyId: caller.keyId });
      return {};
    },
  };
}

/**
 * OpenID Connect Back-Channel Logout 1.0 §2.5/§2.8: the issuer POSTs `logout_token` as a form;
 * 200 when the logout took effect, 400 when the token is refused (forged, replayed, stale, wrong
 * audience), 503 when it could not be recorded now (the issuer may retry). The token's validity is
 * the only credential: no caller key, so a compromised app host can neither forge nor suppress it.
 */
export function createBackchannelLogoutRoute(deps: {
  sessions: Sessions;
  requestId: () => string;
}): FormPostRoute {
  return {
    path: BACKCHANNEL_LOGOUT_PATH,
    async accept(form): Promise<FormPostAnswer> {
      const tokens = form.getAll("logout_token");
      if (tokens.length !== 1 || tokens[0] === undefined || tokens[0].length === 0) {
        return { status: 400, error: "invalid_request", description: "one logout_token is required" };
      }
      try {
        await deps.sessions.endWithLogoutToken(tokens[0], "backchannel", {
          requestId: deps.requestId(),
          callerKeyId: null,
        });
        return { status: 200 };
      } catch (err) {
        if (!isBrokerError(err)) throw err;
        if (err.code === "invalid_argument") {
          return { status: 400, error: "invalid_request", description: err.message };
        }
        if (err.code === "unavailable" || err.code === "deadline_exceeded") {
          return { status: 503, error: "temporarily_unavailable", description: err.message };
        }
        throw err;
      }
    },
  };
}
