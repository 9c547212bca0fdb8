import { describe, expect, it } from "vitest";
import { createNonceSource } from "../../../src/outbound/nonce-source.js";

describe("nonce source", () => {
  it("starts at the clock in microseconds", () => {
    const nonces = createNonceSource({ now: () => 1_616_492_376_594 });
    expect(nonces.next("a")).toBe("1616492376594000");
  });

  it("stays strictly increasing for 1,000 calls within one millisecond", () => {
    const nonces = createNonceSource({ now: () => 1_000 });
    const seen = Array.from({ length: 1000 }, () => BigInt(nonces.next("a")));
    for (let i = 1; i < seen.length; i++) expect((seen[i] ?? 0n) > (seen[i - 1] ?? 0n)).toBe(true);
  });

  it("keeps increasing when the clock steps backwards", () => {
    let now = 2_000;
    const nonces = createNonceSource({ now: () => now });
    const first = BigInt(nonces.next("a"));
    now = 1_000;
    expect(BigInt(nonces.next("a"))).toBeGreaterThan(first);
  });

  it("keeps a separate sequence per secret", () => {
    const nonces = createNonceSource({ now: () => 5 });
    expect(nonces.next("a")).toBe("5000");
    expect(nonces.next("a")).toBe("5001");
    expect(nonces.next("b")).toBe("5000");
  });

  it("still moves forward for a secret that was evicted from memory", () => {
    let now = 10;
    const nonces = createNonceSource({ now: () => now, maxEntries: 2 });
    for (let i = 0; i < 5; i++) nonces.next("a");
    const last = BigInt(nonces.next("a"));
    nonces.next("b");
    nonces.next("c"); // evicts "a"
    now = 1; // and the clock went backwards meanwhile
    expect(BigInt(nonces.next("a"))).toBeGreaterThan(last);
  });
});
