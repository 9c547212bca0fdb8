import type { AuditActor } from "../../audit/audited-operation.js";
import type { CallerIdentity, UserIdentity } from "../../auth/identity.js";
import type { CallContext } from "../transport/call-context.js";

/** The audit trail's view of an authorized call: request id, caller key id, HMAC'd user ref. */
export function actorOf(ctx: CallContext, caller: CallerIdentity, user: UserIdentity): AuditActor {
  return {
    requestId: ctx.requestId,
    callerKeyId: caller.keyId,
    userRef: user.userRef,
    ...(caller.livenessPending === true ? { callerKeyLivenessPending: true } : {}),
  };
}
