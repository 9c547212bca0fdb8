import { describe, expect, it } from "vitest";
import { createWriteBatcher } from "../../../src/rotation/write-batcher.js";

describe("write batcher", () => {
  it("writes rows that arrive together in one batch and answers each row its own result", async () => {
    const batches: string[][] = [];
    const batcher = createWriteBatcher<string>({
      maxBatch: 3,
      maxDelayMs: 10_000,
      writeBatch: async (items) => {
        batches.push([...items]);
        return items.map((item) => item !== "b");
      },
    });

    const results = await Promise.all([batcher.write("a"), batcher.write("b"), batcher.write("c")]);

    expect(batches).toEqual([["a", "b", "c"]]);
    expect(results).toEqual([true, false, true]);
  });

  it("sends a partial batch once its first row has waited maxDelayMs", async () => {
    const batches: string[][] = [];
    const batcher = createWriteBatcher<string>({
      maxBatch: 100,
      maxDelayMs: 5,
      writeBatch: async (items) => {
        batches.push([...items]);
        return items.map(() => true);
      },
    });

    const results = await Promise.all([batcher.write("a"), batcher.write("b")]);

    expect(results).toEqual([true, true]);
    expect(batches).toEqual([["a", "b"]]);
  });

  it("starts a new batch after a full one goes out", async () => {
    const batches: number[][] = [];
    const batcher = createWriteBatcher<number>({
      maxBatch: 2,
      maxDelayMs: 5,
      writeBatch: async (items) => {
        batches.push([...items]);
        return items.map(() => true);
      },
    });

    await Promise.all([1, 2, 3, 4, 5].map((n) => batcher.write(n)));

    expect(batches).toEqual([[1, 2], [3, 4], [5]]);
  });

  it("rejects every row of a batch whose write failed", async () => {
    const failure = new Error("database down");
    const batcher = createWriteBatcher<string>({
      maxBatch: 2,
      maxDelayMs: 5,
      writeBatch: async () => {
        throw failure;
      },
    });

    const outcomes = await Promise.allSettled([batcher.write("a"), batcher.write("b")]);

    expect(outcomes).toEqual([
      { status: "rejected", reason: failure },
      { status: "rejected", reason: failure },
    ]);
  });
});
