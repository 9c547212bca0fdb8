import { readdirSync } from "node:fs";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import type { Reporter, TestModule } from "vitest/node";
import { type CatalogueRow, REPO_ROOT, readCatalogueRows, titleMatcher } from "./catalogue-rows.js";
import { POSTGRES_SKIP_REASON } from "./skip-reasons.js";

/** Every test file vitest.config.ts includes (`test/**` and `src/**`, `*.test.ts`), repo-relative. */
function allTestFiles(root: string): string[] {
  return ["test", "src"].flatMap((dir) =>
    readdirSync(join(root, dir), { recursive: true, encoding: "utf8" })
      .filter((file) => file.endsWith(".test.ts"))
      .map((file) => join(dir, file)),
  );
}

/**
 * Catalogue W5: a catalogue item counts as tested only if a test it names PASSED in this run.
 * The document check alone finds titles in source text, so a skipped test, or a title left in a
 * comment, would still count. Active on a run of the whole suite (`npm test`); a run of a few
 * files is left alone. A failure sets the exit code.
 */
export default class CatalogueReporter implements Reporter {
  onTestRunEnd(testModules: ReadonlyArray<TestModule>): void {
    const root = fileURLToPath(REPO_ROOT);
    const byFile = new Map(
      testModules.map((m) => [
        relative(root, m.moduleId),
        [...m.children.allTests()].map((t) => ({
          name: t.name,
          fullName: t.fullName,
          state: t.result().state,
        })),
      ]),
    );
    // Only a run of the whole suite can prove the catalogue; a run of a few files is left alone.
    if (allTestFiles(root).some((file) => !byFile.has(file))) return;
    const problems = unprovenItems(readCatalogueRows(), byFile);
    if (problems.length === 0) {
      process.stdout.write("catalogue: every tested item has a passing test in this run\n");
      return;
    }
    process.stderr.write(
      `catalogue: ${problems.length} item(s) marked tested have no passing test in this run:\n` +
        problems.map((p) => `  - ${p}\n`).join(""),
    );
    process.exitCode = 1;
  }
}

/** One test as the run reported it. */
export interface TestOutcome {
  readonly name: string;
  readonly fullName: string;
  readonly state: string;
}

/** The tested items whose named tests did not pass in this run, each with the reason. */
export function unprovenItems(
  rows: readonly CatalogueRow[],
  byFile: ReadonlyMap<string, readonly TestOutcome[]>,
  postgresConfigured = Boolean(process.env.TEST_DATABASE_URL),
): string[] {
  const problems: string[] = [];
  for (const row of rows.filter((r) => r.status === "tested")) {
    for (const ref of row.refs) {
      const tests = byFile.get(ref.file);
      if (tests === undefined) {
        problems.push(`${row.item}: ${ref.file} did not run`);
        continue;
      }
      const matches = titleMatcher(ref.title);
      const states = tests.filter((test) => matches.test(test.name));
      if (states.some((s) => s.state === "passed")) continue;
      // Without TEST_DATABASE_URL the Postgres-only suites are registered as skipped, by design.
      const skippedForPostgres =
        states.length > 0 &&
        states.every((s) => s.state === "skipped" && s.fullName.includes(POSTGRES_SKIP_REASON));
      if (skippedForPostgres && !postgresConfigured) continue;
      problems.push(
        states.length === 0
          ? `${row.item}: no test titled "${ref.title}" ran in ${ref.file}`
          : `${row.item}: "${ref.title}" in ${ref.file} did not pass (${[...new Set(states.map((s) => s.state))].join(", ")})`,
      );
    }
  }
  return problems;
}
