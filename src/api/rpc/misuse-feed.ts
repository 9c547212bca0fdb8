import type { CallerIdentity, UserIdentity } from "../../auth/identity.js";
import { isBrokerError } from "../../errors.js";
import type { CallFacts, MisuseMonitor } from "../../signals/misuse-monitor.js";

/** What the call path knows about a use, for the misuse signals. */
export interface UseFacts {
  readonly caller: CallerIdentity;
  readonly user: UserIdentity;
  readonly secretId: string;
}

/**
 * Tells the monitor how a use ended once `work` settles: one observation per finished proxied call
 * or refusal, never awaited by the call (the monitor is synchronous and O(1); this only adds a
 * reaction to a promise the call awaits anyway).
 */
export function watchUse<T>(monitor: MisuseMonitor | undefined, use: UseFacts, work: Promise<T>): Promise<T> {
  if (monitor === undefined) return work;
  const facts = (code: CallFacts["code"]): CallFacts => ({
    callerKeyId: use.caller.keyId,
    callerKeyName: use.caller.name,
    userRef: use.user.userRef,
    secretId: use.secretId,
    code,
    dangerous: false,
    tokenIssuedAt: use.user.issuedAt,
  });
  work.then(
    () => monitor.observe(facts(null)),
    (err: unknown) => monitor.observe(facts(isBrokerError(err) ? err.code : "internal")),
  );
  return work;
}
