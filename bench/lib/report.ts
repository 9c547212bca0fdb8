/** One printed table of a bench section. */
export interface Table {
  readonly title: string;
  readonly columns: readonly string[];
  readonly rows: ReadonlyArray<ReadonlyArray<string | number>>;
  /** Printed under the table: how it was measured, what to read into it. */
  readonly notes?: readonly string[];
}

/** A target from the issue, checked against this run's numbers. */
export interface TargetCheck {
  readonly target: string;
  readonly measured: string;
  readonly met: boolean;
}

export interface SectionResult {
  readonly id: string;
  readonly title: string;
  readonly tables: readonly Table[];
  readonly checks: readonly TargetCheck[];
  /** Calls that failed: a run with any is broken, whatever its numbers say. */
  readonly errors: number;
  /** Raw numbers for bench/results/*.json. */
  readonly data: unknown;
}

export interface SectionOptions {
  readonly quick: boolean;
  /** Progress lines (stderr), so a long run shows it is alive. */
  readonly progress: (line: string) => void;
}

/** `digits` decimals, or "-" for a number that was not measured. */
export function fmt(value: number, digits = 0): string {
  return Number.isFinite(value) ? value.toFixed(digits) : "-";
}

export function markdownTable(table: Table): string {
  const line = (cells: ReadonlyArray<string | number>) => `| ${cells.join(" | ")} |`;
  const out = [`**${table.title}**`, "", line(table.columns), line(table.columns.map(() => "---"))];
  for (const row of table.rows) out.push(line(row));
  for (const note of table.notes ?? []) out.push("", `- ${note}`);
  return out.join("\n");
}

export function markdownChecks(checks: readonly TargetCheck[]): string {
  const out = ["| target | measured | met |", "| --- | --- | --- |"];
  for (const c of checks) out.push(`| ${c.target} | ${c.measured} | ${c.met ? "yes" : "**no**"} |`);
  return out.join("\n");
}

/** The median of a non-empty list (NaN for an empty one). */
export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1
    ? (sorted[mid] as number)
    : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}
