import { existsSync, readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";

/**
 * Keeps docs/security-catalogue.md honest: every catalogue item A1–F57 has exactly one row, and
 * every test a "tested" row names exists, in the file it names, with that exact title. Renaming
 * or deleting a test without updating the document fails here.
 */

const ROOT = new URL("../../", import.meta.url);
const DOC = "docs/security-catalogue.md";
const STATUSES = new Set(["tested", "not applicable", "pending"]);
const SECTIONS: ReadonlyArray<readonly [string, number, number]> = [
  ["A", 1, 15],
  ["B", 16, 22],
  ["C", 23, 35],
  ["D", 36, 46],
  ["E", 47, 50],
  ["F", 51, 57],
];
const ALL_ITEMS = SECTIONS.flatMap(([letter, from, to]) =>
  Array.from({ length: to - from + 1 }, (_, i) => `${letter}${from + i}`),
);

interface Row {
  readonly item: string;
  readonly status: string;
  readonly refs: ReadonlyArray<{ readonly file: string; readonly title: string }>;
  readonly notes: string;
}

function parseRows(markdown: string): Row[] {
  return markdown
    .split("\n")
    .filter((line) => /^\|\s*[A-F]\d{1,2}\s*\|/.test(line))
    .map((line) => {
      const cells = line
        .slice(1, -1)
        .split(/(?<!\\)\|/)
        .map((cell) => cell.trim().replaceAll("\\|", "|"));
      const [item = "", , status = "", where = "", notes = ""] = cells;
      const refs = [...where.matchAll(/`([^`]+)` "([^"]+)"/g)].map((m) => ({
        file: m[1] ?? "",
        title: m[2] ?? "",
      }));
      return { item, status, refs, notes };
    });
}

const rows = parseRows(readFileSync(new URL(DOC, ROOT), "utf8"));
const sources = new Map<string, string | undefined>();
const sourceOf = (file: string): string | undefined => {
  if (!sources.has(file)) {
    const url = new URL(file, ROOT);
    sources.set(file, existsSync(url) ? readFileSync(url, "utf8") : undefined);
  }
  return sources.get(file);
};

describe("docs/security-catalogue.md against the suite", () => {
  it("lists every catalogue item A1–F57 exactly once, in order", () => {
    expect(rows.map((r) => r.item)).toEqual(ALL_ITEMS);
  });

  it("gives every item a known status, and a reason whenever it is not tested", () => {
    for (const row of rows) {
      expect([row.item, STATUSES.has(row.status)]).toEqual([row.item, true]);
      if (row.status !== "tested") expect([row.item, row.notes.length > 10]).toEqual([row.item, true]);
    }
  });

  it("names at least one test for every tested item, and only test files", () => {
    for (const row of rows.filter((r) => r.status === "tested")) {
      expect([row.item, row.refs.length > 0]).toEqual([row.item, true]);
      for (const ref of row.refs)
        expect([row.item, ref.file]).toEqual([row.item, expect.stringMatching(/^test\/.+\.test\.ts$/)]);
    }
  });

  it("finds every named test file, and in it every named title as a string literal", () => {
    const missing: string[] = [];
    for (const row of rows.filter((r) => r.status === "tested")) {
      for (const { file, title } of row.refs) {
        const source = sourceOf(file);
        const quoted = [`"${title}"`, `'${title}'`, `\`${title}\``];
        if (source === undefined) missing.push(`${row.item}: no file ${file}`);
        else if (!quoted.some((q) => source.includes(q)))
          missing.push(`${row.item}: no title "${title}" in ${file}`);
      }
    }
    expect(missing).toEqual([]);
  });

  it("can tell a drifted document from a good one (the checks above are not vacuous)", () => {
    const drifted = parseRows(
      [
        '| A1 | x | tested | `test/unit/auth/token-precheck.test.ts` "A1 a title nobody wrote" | — |',
        "| A2 | x | not applicable | — | — |",
      ].join("\n"),
    );
    expect(drifted.map((r) => r.item)).toEqual(["A1", "A2"]);
    expect(sourceOf(drifted[0]?.refs[0]?.file ?? "")).toBeDefined();
    expect(sourceOf(drifted[0]?.refs[0]?.file ?? "")?.includes('"A1 a title nobody wrote"')).toBe(false);
    expect(drifted[1]?.notes).toBe("—");
  });
});
