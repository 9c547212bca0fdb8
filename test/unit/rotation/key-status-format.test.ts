import { describe, expect, it } from "vitest";
import { formatKeyStatus } from "../../../src/rotation/key-status.js";

describe("keys status table", () => {
  const status = {
    users: new Map([
      ["local:1", 3],
      ["local:2", 12_345],
    ]),
    pepperKeyId: "local:2",
  };

  it("lists users per master key, which key seals the pepper, and the total", () => {
    const lines = formatKeyStatus(status).trimEnd().split("\n");

    expect(lines).toEqual([
      "master key      users  pepper",
      "local:1             3",
      "local:2        12,345  yes",
      "total          12,348",
    ]);
  });

  it("marks keys outside the accepted list as retired and warns while rows depend on them", () => {
    const text = formatKeyStatus(status, new Set(["local:2"]));

    expect(text).toMatch(/^local:1 +3 +RETIRED$/m);
    expect(text).not.toMatch(/^local:2 .*RETIRED/m);
    expect(text).toContain("warning: rows above are wrapped under a retired master key");
  });

  it("says so when nothing is stored yet", () => {
    expect(formatKeyStatus({ users: new Map(), pepperKeyId: undefined })).toBe("no data keys stored yet\n");
  });
});
