import type { CallerIdentity, UserIdentity } from "../../auth/identity.js";
import { isBrokerError } from "../../errors.js";
import { isDangerousClass, type OperationClass } from "../../policy/operation-class.js";
import type { CallFacts, MisuseMonitor } from "../../signals/misuse-monitor.js";

/** What the call path knows about a use, for the misuse signals. */
export interface UseFacts {
  readonly caller: CallerIdentity;
  readonly user: UserIdentity;
  readonly secretId: string;
}

/** One proxied call as the misuse signals watch it. */
export interface WatchedUse {
  /** Notes the operation class the policy found, from the call's (still sealed) read. */
  planned<P extends { readonly operationClass: OperationClass | undefined }>(read: Promise<P>): Promise<P>;
  /** Reports how the call ended once `work` settles, and returns `work` unchanged. */
  settled<T>(work: Promise<T>): Promise<T>;
}

const UNWATCHED: WatchedUse = { planned: (read) => read, settled: (work) => work };

/**
 * One observation per finished proxied call or refusal, never awaited by the call: the monitor is
 * synchronous and O(1), and this only adds reactions to promises the call awaits anyway. A
 * refused dangerous call (a withdrawal outside the grant) still reports its class: the attempt
 * is the signal.
 */
export function watchUse(monitor: MisuseMonitor | undefined, use: UseFacts): WatchedUse {
  if (monitor === undefined) return UNWATCHED;
  let operationClass: OperationClass | undefined;
  const facts = (code: CallFacts["code"]): CallFacts => ({
    callerKeyId: use.caller.keyId,
    callerKeyName: use.caller.name,
    userRef: use.user.userRef,
    secretId: use.secretId,
    code,
    operationClass,
    dangerous: operationClass !== undefined && isDangerousClass(operationClass),
    tokenIssuedAt: use.user.issuedAt,
  });
  return {
    planned(read) {
      read.then(
        (p) => {
          operationClass = p.operationClass;
        },
        () => undefined,
      );
      return read;
    },
    settled(work) {
      work.then(
        () => monitor.observe(facts(null)),
        (err: unknown) => monitor.observe(facts(isBrokerError(err) ? err.code : "internal")),
      );
      return work;
    },
  };
}
