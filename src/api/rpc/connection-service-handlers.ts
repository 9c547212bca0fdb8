import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { AuditedRunner } from "../../audit/audited-operation.js";
import { BrokerError, invalidArgument } from "../../errors.js";
import type { ConnectionService } from "../../gen/keybroker/v1/connections_pb.js";
import type { ConnectFlow } from "../../oauth/connect-flow.js";
import { parseLabel, parseProviderId, parseSecretId } from "../../secrets/secret-input.js";
import type { ServiceHandlers } from "../transport/handlers.js";
import { actorOf } from "./audit-actor.js";
import type { UserCallGuard } from "./call-guard.js";

const MAX_SCOPES = 64;
const MAX_RETURN_URL_CHARS = 2048;

/** Thin handlers: authorize, parse, delegate (audited), convert. Logic lives in oauth/. */
export function createConnectionServiceHandlers(deps: {
  guard: UserCallGuard;
  /** Undefined when OAuth connections are not configured (no public callback listener). */
  connect: ConnectFlow | undefined;
  audited: AuditedRunner;
}): ServiceHandlers<typeof ConnectionService> {
  const { guard, connect, audited } = deps;
  return {
    async startConnection(request, ctx) {
      const { caller, user } = await guard.authorize(ctx, "oauth:connect");
      if (connect === undefined) {
        throw new BrokerError("failed_precondition", "OAuth connections are not configured on this broker");
      }
      const provider = parseProviderId(request.provider);
      if (request.scopes.length > MAX_SCOPES) throw invalidArgument(`at most ${MAX_SCOPES} scopes`);
      if (request.returnUrl.length === 0 || request.returnUrl.length > MAX_RETURN_URL_CHARS) {
        throw invalidArgument(`return_url must be 1-${MAX_RETURN_URL_CHARS} characters`);
      }
      const input = {
        provider,
        scopes: request.scopes,
        returnUrl: request.returnUrl,
        secretId: request.secretId === "" ? undefined : parseSecretId(request.secretId),
        label: request.label === "" ? undefined : parseLabel(request.label),
      };
      const started = await audited.run(
        actorOf(ctx, caller, user),
        {
          action: "oauth.connect_start",
          sensitive: false,
          ...(input.secretId === undefined ? {} : { target: input.secretId }),
          detail: { provider },
        },
        () => connect.start(user, caller, input, ctx.signal),
      );
      return { authorizationUrl: started.authorizationUrl, expiresAt: timestampFromDate(started.expiresAt) };
    },
  };
}
