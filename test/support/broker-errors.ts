import { expect } from "vitest";
import { BrokerError, type BrokerErrorCode } from "../../src/errors.js";

// "This must fail with a BrokerError": the one way every test says it, so a call that succeeds,
// or fails with anything else, fails the test with the same clear message.

/** Awaits `promise`, which must reject with a BrokerError, and returns that error to inspect. */
export async function brokerErrorOf(promise: Promise<unknown>): Promise<BrokerError> {
  let caught: unknown;
  try {
    await promise;
  } catch (err) {
    caught = err;
  }
  return asBrokerError(caught, "expected a BrokerError, but the call succeeded");
}

/** Awaits `promise`, which must reject with a BrokerError carrying `code`; returns the error. */
export async function expectBrokerError(
  promise: Promise<unknown>,
  code: BrokerErrorCode,
): Promise<BrokerError> {
  const err = await brokerErrorOf(promise);
  expect(err.code).toBe(code);
  return err;
}

/** Runs `fn`, which must throw a BrokerError, and returns that error to inspect. */
export function brokerErrorThrownBy(fn: () => unknown): BrokerError {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  return asBrokerError(caught, "expected a BrokerError, but the call returned");
}

/**
 * The code of the BrokerError `fn` throws: undefined when it returns, "not a BrokerError" when it
 * throws anything else. For tables that list accepted and refused inputs side by side.
 */
export function brokerCodeOf(fn: () => unknown): BrokerErrorCode | "not a BrokerError" | undefined {
  try {
    fn();
  } catch (err) {
    return err instanceof BrokerError ? err.code : "not a BrokerError";
  }
  return undefined;
}

function asBrokerError(caught: unknown, whenNothingThrown: string): BrokerError {
  if (caught === undefined) throw new Error(whenNothingThrown);
  expect(caught).toBeInstanceOf(BrokerError);
  if (!(caught instanceof BrokerError)) throw caught;
  return caught;
}
