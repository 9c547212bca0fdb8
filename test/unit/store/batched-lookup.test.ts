import { describe, expect, it } from "vitest";
import { createBatchedLookup } from "../../../src/store/batched-lookup.js";

/** A load whose calls are recorded and settled by the test, one at a time. */
function controlledLoad() {
  const calls: Array<{
    keys: readonly string[];
    resolve: (found: ReadonlyMap<string, string>) => void;
    reject: (err: unknown) => void;
  }> = [];
  const load = (keys: readonly string[]) =>
    new Promise<ReadonlyMap<string, string>>((resolve, reject) => calls.push({ keys, resolve, reject }));
  return { calls, load };
}

const turn = () => new Promise<void>((resolve) => setImmediate(resolve));
const answer = (keys: readonly string[], tag: string) => new Map(keys.map((k) => [k, `${k}@${tag}`]));

describe("batched lookup", () => {
  const options = { idOf: (k: string) => k, maxBatch: 100, maxInFlight: 1 };

  it("reads keys asked in the same event-loop turn with one query, each distinct key once", async () => {
    const { calls, load } = controlledLoad();
    const lookup = createBatchedLookup({ ...options, load });
    const results = Promise.all([lookup.get("a"), lookup.get("b"), lookup.get("a")]);
    await turn();
    expect(calls.map((c) => c.keys)).toEqual([["a", "b"]]);
    calls[0]?.resolve(answer(["a", "b"], "1"));
    expect(await results).toEqual(["a@1", "b@1", "a@1"]);
  });

  it("answers a key asked while a read is in flight from the NEXT read, never the one already running", async () => {
    const { calls, load } = controlledLoad();
    const lookup = createBatchedLookup({ ...options, load });
    const early = lookup.get("key");
    await turn();
    const late = lookup.get("key"); // the first read started before this call: it must not serve it
    calls[0]?.resolve(answer(["key"], "before-revocation"));
    expect(await early).toBe("key@before-revocation");
    await turn();
    expect(calls).toHaveLength(2);
    calls[1]?.resolve(answer(["key"], "after-revocation"));
    expect(await late).toBe("key@after-revocation");
  });

  it("gives undefined for a key the read did not find", async () => {
    const lookup = createBatchedLookup({ ...options, load: async () => new Map([["a", "found"]]) });
    expect(await Promise.all([lookup.get("a"), lookup.get("missing")])).toEqual(["found", undefined]);
  });

  it("splits a batch at maxBatch and keeps at most maxInFlight reads running", async () => {
    const { calls, load } = controlledLoad();
    const lookup = createBatchedLookup({ idOf: (k: string) => k, maxBatch: 2, maxInFlight: 2, load });
    const keys = ["a", "b", "c", "d", "e"];
    const results = Promise.all(keys.map((k) => lookup.get(k)));
    await turn();
    expect(calls.map((c) => c.keys)).toEqual([
      ["a", "b"],
      ["c", "d"],
    ]);
    calls[0]?.resolve(answer(["a", "b"], "1"));
    await turn();
    expect(calls.map((c) => c.keys)).toEqual([["a", "b"], ["c", "d"], ["e"]]);
    calls[1]?.resolve(answer(["c", "d"], "2"));
    calls[2]?.resolve(answer(["e"], "3"));
    expect(await results).toEqual(["a@1", "b@1", "c@2", "d@2", "e@3"]);
  });

  it("rejects every call of a failed read with its error, and reads again for the next calls", async () => {
    const { calls, load } = controlledLoad();
    const lookup = createBatchedLookup({ ...options, load });
    const failed = Promise.allSettled([lookup.get("a"), lookup.get("b")]);
    await turn();
    const err = new Error("connection reset");
    calls[0]?.reject(err);
    expect((await failed).map((r) => (r.status === "rejected" ? r.reason : r.value))).toEqual([err, err]);
    const retried = lookup.get("a");
    await turn();
    calls[1]?.resolve(answer(["a"], "2"));
    expect(await retried).toBe("a@2");
  });

  it("refuses a batch size or in-flight limit that is not a positive integer", () => {
    const load = async () => new Map<string, string>();
    expect(() => createBatchedLookup({ ...options, maxBatch: 0, load })).toThrow(RangeError);
    expect(() => createBatchedLookup({ ...options, maxInFlight: 1.5, load })).toThrow(RangeError);
  });
});
