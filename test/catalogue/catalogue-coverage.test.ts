import { existsSync, readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { type TestOutcome, unprovenItems } from "../support/catalogue-reporter.js";
import {
  CATALOGUE_DOC,
  CATALOGUE_ITEMS,
  parseCatalogueRows,
  REPO_ROOT,
  titleMatcher,
} from "../support/catalogue-rows.js";

/**
 * Keeps docs/security-catalogue.md honest: every catalogue item (A1–L282, by the ranges in catalogue-rows.ts) has exactly one row, and
 * every test a "tested" row names exists, in the file it names, with that exact title. Renaming
 * or deleting a test without updating the document fails here. Whether each named test also
 * PASSED is checked on the run's results by test/support/catalogue-reporter.ts (W5).
 */

const ROOT = REPO_ROOT;
const DOC = CATALOGUE_DOC;
const STATUSES = new Set(["tested", "not applicable", "pending"]);
const ALL_ITEMS = CATALOGUE_ITEMS;
const parseRows = parseCatalogueRows;

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
  it("lists every catalogue item exactly once, in order", () => {
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

describe("W5 the catalogue counts only tests that passed in the run", () => {
  const row = parseCatalogueRows(
    '| A1 | x | tested | `test/a.test.ts` "A1 refuses %j with invalid_argument" | — |',
  );
  const run = (tests: TestOutcome[]) => new Map([["test/a.test.ts", tests]]);
  const test = (name: string, state: string, fullName = name): TestOutcome => ({ name, state, fullName });

  it("W5 accepts an item whose named test (an it.each template) passed", () => {
    expect(unprovenItems(row, run([test('A1 refuses "/x" with invalid_argument', "passed")]))).toEqual([]);
  });

  it("W5 refuses an item whose named test was skipped, failed, absent, or whose file did not run", () => {
    expect(unprovenItems(row, run([test('A1 refuses "/x" with invalid_argument', "skipped")]))).toHaveLength(
      1,
    );
    expect(unprovenItems(row, run([test('A1 refuses "/x" with invalid_argument', "failed")]))).toHaveLength(
      1,
    );
    // A title left in a comment is in the source text but never ran as a test.
    expect(unprovenItems(row, run([test("another test", "passed")]))).toHaveLength(1);
    expect(unprovenItems(row, new Map())).toEqual(["A1: test/a.test.ts did not run"]);
  });

  it("W5 tolerates Postgres-only tests skipped for a missing TEST_DATABASE_URL only when it is missing", () => {
    const skipped = run([
      test(
        "A1 refuses 1 with invalid_argument",
        "skipped",
        "on postgres (skipped: TEST_DATABASE_URL is not set) A1",
      ),
    ]);
    expect(unprovenItems(row, skipped, false)).toEqual([]);
    expect(unprovenItems(row, skipped, true)).toHaveLength(1);
  });

  it("matches it.each placeholders and $-interpolations, and nothing else", () => {
    expect(
      titleMatcher("C25 refuses %j with invalid_argument").test('C25 refuses "/a" with invalid_argument'),
    ).toBe(true);
    expect(titleMatcher("refuses $name (case)").test("refuses x.y (case)")).toBe(true);
    expect(titleMatcher("a.b").test("axb")).toBe(false);
  });
});
