import { describe, expect, it } from "vitest";
import { BrokerError } from "../../../src/errors.js";
import { pageOf, pageSizeOf, pageTokenOf, positionOfPageToken } from "../../../src/store/keyset-page.js";

const LIMITS = { defaultSize: 100, maxSize: 500 };

function invalid(run: () => unknown): string {
  try {
    run();
  } catch (err) {
    expect(err).toBeInstanceOf(BrokerError);
    expect((err as BrokerError).code).toBe("invalid_argument");
    return (err as BrokerError).message;
  }
  throw new Error("expected INVALID_ARGUMENT");
}

describe("keyset page tokens and sizes", () => {
  it("K236 page_size 0 is the default and a size above the maximum is clamped to it, never unbounded", () => {
    expect(pageSizeOf({ pageSize: 0, pageToken: "" }, LIMITS)).toBe(100);
    expect(pageSizeOf({ pageSize: 7, pageToken: "" }, LIMITS)).toBe(7);
    expect(pageSizeOf({ pageSize: 501, pageToken: "" }, LIMITS)).toBe(500);
    expect(pageSizeOf({ pageSize: 2 ** 32 - 1, pageToken: "" }, LIMITS)).toBe(500);
    invalid(() => pageSizeOf({ pageSize: -1, pageToken: "" }, LIMITS));
  });

  it("K237 a token round-trips its position and is refused by another list, version or shape", () => {
    const position = { createdAtMicros: 1_790_000_000_123_456, id: "ck_00000000000000ab" };
    const token = pageTokenOf("k", position);
    expect(token).toMatch(/^[A-Za-z0-9_-]+$/);
    expect(positionOfPageToken("k", token)).toEqual(position);
    expect(positionOfPageToken("k", "")).toBeUndefined();
    const refusals = [
      pageTokenOf("s", position),
      Buffer.from("k2.1.ck_x").toString("base64url"),
      Buffer.from(`k1.${2 ** 60}.ck_x`).toString("base64url"),
      Buffer.from("k1.01.ck_x").toString("base64url"),
      Buffer.from("k1.1.ck x").toString("base64url"),
      `${token}=`,
      "x".repeat(129),
    ];
    for (const bad of refusals) {
      expect(invalid(() => positionOfPageToken("k", bad))).toBe("page_token is not one this list issued");
    }
  });

  it("cuts one row more than the page into the page and the next token", () => {
    const rows = [1, 2, 3].map((n) => ({ createdAtMicros: n, id: `r${n}` }));
    const first = pageOf("k", rows, 2);
    expect(first.rows.map((r) => r.id)).toEqual(["r1", "r2"]);
    expect(positionOfPageToken("k", first.nextPageToken)).toEqual({ createdAtMicros: 2, id: "r2" });
    expect(pageOf("k", rows.slice(0, 2), 2).nextPageToken).toBe("");
  });
});
