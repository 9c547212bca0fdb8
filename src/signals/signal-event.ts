import type { BrokerErrorCode } from "../errors.js";

/** The misuse signals the broker computes (issue 13 item 7), as metric labels and audit reasons spell them. */
export const MISUSE_SIGNALS = [
  "user_rate",
  "secret_spread",
  "dangerous_first_use",
  "probing",
  "token_age",
] as const;
export type MisuseSignalName = (typeof MISUSE_SIGNALS)[number];

export function isMisuseSignalName(value: string): value is MisuseSignalName {
  return (MISUSE_SIGNALS as readonly string[]).includes(value);
}

/**
 * One finished proxied call or refusal, as the detectors see it. Built by the call path from what
 * it already holds; the raw `sub`, the token and any secret value are never part of it.
 */
export interface CallObservation {
  readonly callerKeyId: string;
  readonly callerKeyName: string;
  /** The user's 32-byte HMAC'd ref (SPEC I5), never a `sub`. */
  readonly userRef: Uint8Array;
  /** The secret the call named (it may not exist: a probe). */
  readonly secretId: string;
  /** null when the call succeeded; otherwise the BrokerError code it failed or was refused with. */
  readonly code: BrokerErrorCode | null;
  /** The operation class the call was classified as, when known (e.g. "read", "transfer"). */
  readonly operationClass?: string | undefined;
  /** True when the class is a dangerous one (transfer, credentials, webhooks), attempted or done. */
  readonly dangerous: boolean;
  /** The access token's `iat`, epoch seconds, when it carried one. */
  readonly tokenIssuedAt?: number | undefined;
}

/** What a detector reports when its signal trips. Counts and ids only: nothing a user chose. */
export interface SignalTrip {
  readonly signal: MisuseSignalName;
  readonly at: number;
  readonly callerKeyId: string;
  readonly callerKeyName: string;
  /** The user the signal is about (user_rate only): their HMAC'd ref, never a `sub`. */
  readonly userRef?: Uint8Array | undefined;
  /** The operation class (dangerous_first_use only). */
  readonly operationClass?: string | undefined;
  /** The measure that crossed its threshold (calls, refusals, distinct secrets per minute, seconds). */
  readonly observed: number;
  /** The trailing baseline it was compared with, in the same unit. */
  readonly baseline: number;
}

/** A detector: a small state machine fed one observation at a time, O(1) each; `at` is epoch ms. */
export interface Detector {
  observe(event: CallObservation, at: number): SignalTrip | undefined;
}
