import { status } from "@grpc/grpc-js";
import { sql } from "kysely";
import { afterAll, beforeAll, expect, it } from "vitest";
import { type BrokerHarness, startBroker } from "../support/broker-harness.js";
import { findLeaks } from "../support/captured-logs.js";
import { asServiceError, unary, type WireMessage } from "../support/grpc-client.js";
import { describeOnEachDatabase } from "../support/test-database.js";

// Issue 16 item 8: ListSecrets and AdminService.ListCallerKeys page with page_size and an opaque
// page_token, through real grpc-js clients (proto-loader, as the main app calls).
const ALICE = "auth0|pagination-canary-alice";
const BOB = "auth0|pagination-canary-bob";

describeOnEachDatabase("ListSecrets and ListCallerKeys pagination on %s", (kind) => {
  let broker: BrokerHarness;
  let appKey: string;
  let adminKey: string;
  let alice: string;
  let bob: string;

  beforeAll(async () => {
    broker = await startBroker(kind);
    appKey = (await broker.callerKey(["secrets:read", "secrets:write"])).key;
    adminKey = (await broker.callerKey(["admin"])).key;
    alice = await broker.tokenFor(ALICE);
    bob = await broker.tokenFor(BOB);
  });

  afterAll(async () => {
    await broker.close();
    expect(findLeaks(broker.logs.text(), [appKey, adminKey, alice, bob, ALICE, BOB])).toEqual([]);
  });

  const secrets = (method: string, request: WireMessage, token: string) =>
    unary(broker.clients.secrets, method, request, { callerKey: appKey, bearerToken: token }).then(
      (r) => r.response,
    );
  const admin = (request: WireMessage) =>
    unary(broker.clients.admin, "ListCallerKeys", request, { callerKey: adminKey }).then((r) => r.response);
  const refusal = (promise: Promise<unknown>) =>
    promise.then(
      () => ({ code: status.OK, details: "" }),
      (e: unknown) => ({ code: asServiceError(e).code, details: asServiceError(e).details }),
    );
  const ids = (response: WireMessage, field: string) =>
    (response[field] as WireMessage[]).map((item) => item.id as string);

  /** Every page of a list at `pageSize`, following next_page_token to the end. */
  async function allPages(
    list: (request: WireMessage) => Promise<WireMessage>,
    field: string,
    pageSize: number,
  ) {
    const pages: string[][] = [];
    let pageToken = "";
    do {
      const response = await list({ pageSize, pageToken });
      pages.push(ids(response, field));
      pageToken = response.nextPageToken as string;
      expect(pages.length).toBeLessThan(100);
    } while (pageToken !== "");
    return pages;
  }

  const put = async (token: string, label: string) => {
    const response = await secrets(
      "PutSecret",
      { provider: "test-upstream", label, fields: { token: "pagination-canary-value" } },
      token,
    );
    return (response.secret as WireMessage).id as string;
  };

  it("K230 ListSecrets pages a user's secrets oldest first: no repeats, no gaps, the last token empty", async () => {
    for (let i = 0; i < 5; i++) await put(alice, `page ${i}`);
    // Three rows share one microsecond (a page boundary falls between two of them) and one has
    // a sub-millisecond part, as rows written by the database's now() do: the order falls back
    // to the id, and no row is shown twice (a millisecond position would repeat one).
    await sql`update secrets set created_at = '2026-01-01T00:00:00.000001Z'
               where label in ('page 1', 'page 2', 'page 3')`.execute(broker.database.db);
    await sql`update secrets set created_at = '2026-01-01T00:00:00.000500Z' where label = 'page 4'`.execute(
      broker.database.db,
    );

    const everything = await secrets("ListSecrets", {}, alice);
    expect(everything.nextPageToken).toBe("");
    const all = ids(everything, "secrets");
    expect(all).toHaveLength(5);

    const pages = await allPages((r) => secrets("ListSecrets", r, alice), "secrets", 2);
    expect(pages.map((p) => p.length)).toEqual([2, 2, 1]);
    expect(pages.flat()).toEqual(all);
  });

  it("K231 ListSecrets: a secret deleted between pages neither repeats nor hides the rest", async () => {
    const first = await secrets("ListSecrets", { pageSize: 2 }, alice);
    const shown = ids(first, "secrets");
    const all = ids(await secrets("ListSecrets", {}, alice), "secrets");
    // The last row shown (the token's position) is deleted before the next page is asked for.
    await secrets("DeleteSecret", { secretId: shown[1] }, alice);
    const rest = await secrets("ListSecrets", { pageSize: 10, pageToken: first.nextPageToken }, alice);
    expect(ids(rest, "secrets")).toEqual(all.slice(2));
  });

  it("K232 ListSecrets: a page token from one user's list shows another user only their own secrets", async () => {
    const bobs = await put(bob, "bob's only");
    const alicePage = await secrets("ListSecrets", { pageSize: 1 }, alice);
    expect(alicePage.nextPageToken).not.toBe("");
    const replayed = await secrets("ListSecrets", { pageToken: alicePage.nextPageToken }, bob);
    const seen = ids(replayed, "secrets");
    expect(seen.every((id) => id === bobs)).toBe(true);
    expect(seen).not.toContain(ids(alicePage, "secrets")[0]);
  });

  it("K233 ListSecrets refuses a garbled, foreign or over-long page token with INVALID_ARGUMENT and does not echo it", async () => {
    const keysPage = await admin({ pageSize: 1 });
    const foreign = keysPage.nextPageToken as string;
    expect(foreign).not.toBe("");
    const forged = Buffer.from("s1.12.not-a-uuid").toString("base64url");
    for (const pageToken of [
      "garbled!",
      foreign,
      forged,
      "A".repeat(4000),
      Buffer.from("s2.1.x").toString("base64url"),
    ]) {
      const refused = await refusal(secrets("ListSecrets", { pageToken }, alice));
      expect(refused.code, pageToken.slice(0, 40)).toBe(status.INVALID_ARGUMENT);
      expect(refused.details).toContain("page_token");
      expect(refused.details).not.toContain(pageToken);
    }
  });

  it("K234 ListCallerKeys pages the caller keys oldest first, rows of one microsecond ordered by id", async () => {
    for (let i = 0; i < 3; i++) await broker.callerKey(["secrets:read"]);
    await sql`update caller_keys set created_at = '2026-02-02T00:00:00.000007Z'
               where id in (select id from caller_keys order by id limit 3)`.execute(broker.database.db);
    const everything = await admin({});
    expect(everything.nextPageToken).toBe("");
    const all = ids(everything, "callerKeys");
    expect(all.length).toBeGreaterThanOrEqual(5);
    const pages = await allPages(admin, "callerKeys", 2);
    expect(pages.every((p) => p.length <= 2)).toBe(true);
    expect(pages.flat()).toEqual(all);
  });

  it("K235 ListCallerKeys refuses a garbled or foreign page token with INVALID_ARGUMENT", async () => {
    const secretsPage = await secrets("ListSecrets", { pageSize: 1 }, alice);
    for (const pageToken of [
      "%%%",
      secretsPage.nextPageToken as string,
      Buffer.from("k1.-1.ck_x").toString("base64url"),
    ]) {
      const refused = await refusal(admin({ pageToken }));
      expect(refused.code, pageToken).toBe(status.INVALID_ARGUMENT);
      expect(refused.details).not.toContain(pageToken);
    }
  });
});
