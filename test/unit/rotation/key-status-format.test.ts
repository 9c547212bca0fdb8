import { describe, expect, it } from "vitest";
import { formatKeyStatus } from "../../../src/rotation/key-status.js";

describe("keys status table", () => {
  const status = {
    users: new Map([
      ["local:1", 3],
      ["local:2", 12_345],
    ]),
    oauthApps: new Map<string, number>(),
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
    expect(formatKeyStatus({ users: new Map(), oauthApps: new Map(), pepperKeyId: undefined })).toBe(
      "no data keys stored yet\n",
    );
  });

  it("adds a column of OAuth apps per master key once any is stored, so a key holding only apps is listed", () => {
    const withApps = { ...status, oauthApps: new Map([["local:1", 2]]) };

    expect(
      formatKeyStatus(withApps, new Set(["local:2"]))
        .trimEnd()
        .split("\n"),
    ).toEqual([
      "master key      users  oauth apps  pepper",
      "local:1             3           2          RETIRED",
      "local:2        12,345           0  yes",
      "total          12,348           2",
      "",
      "warning: rows above are wrapped under a retired master key and will be refused; run rewrap",
    ]);
    const onlyApps = { users: new Map(), oauthApps: new Map([["local:1", 1]]), pepperKeyId: "local:2" };
    expect(formatKeyStatus(onlyApps, new Set(["local:2"]))).toMatch(/^local:1 +0 +1 +RETIRED$/m);
  });
});
