import { readFileSync } from "node:fs";

/**
 * docs/security-catalogue.md as data: one row per catalogue item, with the tests that prove it
 * (file and exact title, or `it.each` title template). Shared by the document check
 * (test/catalogue/catalogue-coverage.test.ts) and the run-results check (catalogue-reporter.ts).
 */

export const CATALOGUE_DOC = "docs/security-catalogue.md";
export const REPO_ROOT = new URL("../../", import.meta.url);

/**
 * Item ranges by section: A–F from the original catalogue, G for the review findings (issue 12),
 * H for least privilege (issue 13), I for session binding (issue 14), J for OAuth connections
 * (issue 15), K for the integrator's experience (issue 16), L for performance (issue 17). A
 * section may list several ranges: ids a helper reserved and did not use are simply not listed.
 */
export const CATALOGUE_SECTIONS: ReadonlyArray<readonly [string, number, number]> = [
  ["A", 1, 15],
  ["B", 16, 22],
  ["C", 23, 35],
  ["D", 36, 46],
  ["E", 47, 50],
  ["F", 51, 57],
  ["G", 58, 84],
  ["H", 85, 124],
  ["I", 125, 158],
  ["J", 159, 199],
  ["K", 200, 204],
  ["K", 210, 223],
  ["K", 230, 241],
  ["K", 245, 258],
  ["L", 260, 265],
  ["L", 275, 291],
];

export const CATALOGUE_ITEMS = CATALOGUE_SECTIONS.flatMap(([letter, from, to]) =>
  Array.from({ length: to - from + 1 }, (_, i) => `${letter}${from + i}`),
);

export interface TestRef {
  readonly file: string;
  readonly title: string;
}

export interface CatalogueRow {
  readonly item: string;
  readonly status: string;
  readonly refs: readonly TestRef[];
  readonly notes: string;
}

export function parseCatalogueRows(markdown: string): CatalogueRow[] {
  return markdown
    .split("\n")
    .filter((line) => /^\|\s*[A-L]\d{1,3}\s*\|/.test(line))
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

export function readCatalogueRows(): CatalogueRow[] {
  return parseCatalogueRows(readFileSync(new URL(CATALOGUE_DOC, REPO_ROOT), "utf8"));
}

/**
 * A matcher for the titles a test title (or `it.each` template) produces: printf-style
 * placeholders (`%s`, `%j`, `%i`...) and `$name` interpolations match any text.
 */
export function titleMatcher(template: string): RegExp {
  const pattern = template
    .split(/(%[sdifjoO#]|\$\{[^}]*\}|\$[A-Za-z_][\w.]*)/)
    .map((part, i) => (i % 2 === 1 ? "[\\s\\S]*" : part.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")))
    .join("");
  return new RegExp(`^${pattern}$`);
}
