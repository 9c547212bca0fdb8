/** Why the Postgres half of a storage suite did not run, shown in its (skipped) title (W6). */
export const POSTGRES_SKIP_REASON = "skipped: TEST_DATABASE_URL is not set";
