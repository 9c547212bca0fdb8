import { performance } from "node:perf_hooks";
import { isBrokerError } from "../errors.js";
import type { Keyring } from "../keys/keyring.js";
import type { KmsOp, KmsOutcome, Metrics } from "./metrics.js";

export interface InstrumentedKeyringDeps {
  readonly keyring: Keyring;
  readonly metrics: Pick<Metrics, "kmsCall">;
}

/**
 * The same keyring, with every call timed and counted by verb and outcome. Only the verb and
 * the error code are recorded: never a key id, a wrapped key or an encryption context value
 * (the context holds user refs, which must not become labels, SPEC I7).
 */
export function createInstrumentedKeyring(deps: InstrumentedKeyringDeps): Keyring {
  const { keyring, metrics } = deps;

  async function timed<T>(op: KmsOp, call: () => Promise<T>): Promise<T> {
    const began = performance.now();
    try {
      const result = await call();
      metrics.kmsCall(op, "ok", performance.now() - began);
      return result;
    } catch (err) {
      metrics.kmsCall(op, outcomeOf(err), performance.now() - began);
      throw err;
    }
  }

  return {
    kind: keyring.kind,
    currentKeyId: () => keyring.currentKeyId(),
    generateDataKey: (context, options) =>
      timed("generate_data_key", () => keyring.generateDataKey(context, options)),
    decrypt: (wrapped, context, options) =>
      timed("decrypt", () => keyring.decrypt(wrapped, context, options)),
    reEncrypt: (wrapped, context, destinationKeyId, options) =>
      timed("re_encrypt", () => keyring.reEncrypt(wrapped, context, destinationKeyId, options)),
  };
}

// Keyrings throw BrokerErrors by contract; anything else is a bug, counted as internal.
function outcomeOf(err: unknown): KmsOutcome {
  return isBrokerError(err) ? err.code : "internal";
}
