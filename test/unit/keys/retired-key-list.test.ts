import { describe, expect, it } from "vitest";
import { BrokerError } from "../../../src/errors.js";
import { parseAcceptedMasterKeys } from "../../../src/keys/retired-key-guard.js";

const ARN = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
const MRK = "arn:aws:kms:us-east-1:123456789012:key/mrk-1234abcd12ab34cd56ef1234567890ab";

describe("accepted master key list", () => {
  it("reads key ARNs and local versions, comma-separated, ignoring spaces and empty entries", () => {
    expect(parseAcceptedMasterKeys(` ${ARN}, local:3 ,,${MRK}`)).toEqual([ARN, "local:3", MRK]);
  });

  it.each([
    ["an alias", "alias/keybroker"],
    ["an alias ARN", "arn:aws:kms:eu-west-1:123456789012:alias/keybroker"],
    ["a bare key id", "1234abcd-12ab-34cd-56ef-1234567890ab"],
    ["local version 0", "local:0"],
  ])("refuses %s: KMS reports key ARNs, so it would never match", (_, entry) => {
    expect(() => parseAcceptedMasterKeys(`local:2,${entry}`)).toThrow(BrokerError);
  });

  it("refuses an empty list rather than accepting nothing (or everything)", () => {
    expect(() => parseAcceptedMasterKeys(" , ")).toThrow(/at least one/);
  });
});
