import { sql } from "kysely";
import { afterAll, beforeAll, beforeEach, expect, it } from "vitest";
import type { PreparedStatement } from "../../../src/store/prepared.js";
import {
  createTestDatabase,
  describeOnEachDatabase,
  type TestDatabase,
} from "../../support/test-database.js";

const READ_STATE: PreparedStatement = {
  name: "test_read_state",
  text: "select name from broker_state where name = $1",
};
const INSERT_STATE: PreparedStatement = {
  name: "test_insert_state",
  text: "insert into broker_state (name, wrapped_value, master_key_id) values ($1, '\\x00', 'k')",
};
const BAD_CAST: PreparedStatement = { name: "test_bad_cast", text: "select $1::uuid as id" };

/** A promise and the function that settles it, to hold a transaction open at a chosen point. */
function gate(): { opened: Promise<void>; open: () => void } {
  let open = () => {};
  const opened = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { opened, open };
}

describeOnEachDatabase("prepared statements on %s", (kind) => {
  let database: TestDatabase;
  beforeAll(async () => {
    database = await createTestDatabase(kind);
  });
  afterAll(async () => {
    await database.close();
  });
  beforeEach(async () => {
    await database.truncate();
  });

  const stored = async (name: string) =>
    (await sql<{ name: string }>`select name from broker_state where name = ${name}`.execute(database.db))
      .rows.length;

  // PGlite is one connection: a statement sent while another caller's transaction is open
  // would otherwise run inside it.
  it("never read another caller's uncommitted row", async () => {
    const inserted = gate();
    const release = gate();
    const transaction = database.db
      .transaction()
      .execute(async (trx) => {
        await sql`insert into broker_state (name, wrapped_value, master_key_id) values ('uncommitted', '\\x00', 'k')`.execute(
          trx,
        );
        inserted.open();
        await release.opened;
        throw new Error("roll back");
      })
      .catch(() => undefined);
    await inserted.opened;
    const read = database.prepared.rows(READ_STATE, ["uncommitted"]);
    release.open();
    expect(await read).toEqual([]);
    await transaction;
    expect(await stored("uncommitted")).toBe(0);
  });

  it("do not abort another caller's open transaction when they fail", async () => {
    const inserted = gate();
    const release = gate();
    const transaction = database.db.transaction().execute(async (trx) => {
      await sql`insert into broker_state (name, wrapped_value, master_key_id) values ('first', '\\x00', 'k')`.execute(
        trx,
      );
      inserted.open();
      await release.opened;
      await sql`insert into broker_state (name, wrapped_value, master_key_id) values ('second', '\\x00', 'k')`.execute(
        trx,
      );
    });
    await inserted.opened;
    const failing = database.prepared.rows(BAD_CAST, ["not-a-uuid"]);
    release.open();
    await expect(failing).rejects.toThrow();
    await transaction;
    expect((await stored("first")) + (await stored("second"))).toBe(2);
  });

  it("commit a transaction whose work resolves", async () => {
    const result = await database.prepared.transaction(async (tx) => {
      await tx.rows(INSERT_STATE, ["committed"]);
      return "done";
    });
    expect(result).toBe("done");
    expect(await stored("committed")).toBe(1);
  });

  it("roll a transaction back when its work throws, and leave the connection usable", async () => {
    await expect(
      database.prepared.transaction(async (tx) => {
        await tx.rows(INSERT_STATE, ["rolled-back"]);
        await tx.rows(BAD_CAST, ["not-a-uuid"]);
      }),
    ).rejects.toThrow();
    expect(await stored("rolled-back")).toBe(0);
    expect(await database.prepared.rows(READ_STATE, ["anything"])).toEqual([]);
  });

  it("refuse a transaction nested in another", async () => {
    await expect(database.prepared.transaction((tx) => tx.transaction(async () => 1))).rejects.toThrow(
      /nested/,
    );
  });
});
