import { describe, expect, it } from "vitest";
import { BrokerError } from "../../../src/errors.js";
import {
  isKmsKeyArn,
  isLocalKeyId,
  localKeyId,
  localKeyVersion,
  parseAcceptedMasterKeys,
} from "../../../src/keys/key-ids.js";

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

describe("local key ids", () => {
  it("names a local master key version as local:N and reads the version back", () => {
    expect(localKeyId(7)).toBe("local:7");
    expect(localKeyVersion(localKeyId(7))).toBe(7);
    expect(isLocalKeyId("local:4294967295")).toBe(true);
  });

  it.each(["local:0", "local:07", "local:", "local:12345678901", "LOCAL:1", " local:1", ARN])(
    "does not read %s as a local key id",
    (id) => {
      expect(isLocalKeyId(id)).toBe(false);
      expect(localKeyVersion(id)).toBeUndefined();
    },
  );
});

describe("KMS key ARNs", () => {
  it("accepts key ARNs in any partition, multi-Region keys included", () => {
    expect(isKmsKeyArn(ARN)).toBe(true);
    expect(isKmsKeyArn(MRK)).toBe(true);
    expect(isKmsKeyArn("arn:aws-us-gov:kms:us-gov-west-1:123456789012:key/1234abcd-12ab")).toBe(true);
  });

  it.each([
    "alias/keybroker",
    "arn:aws:kms:eu-west-1:123456789012:alias/keybroker",
    "1234abcd-12ab-34cd-56ef-1234567890ab",
    "arn:aws:kms:eu-west-1:1234:key/1234abcd",
    "local:1",
  ])("does not read %s as a key ARN: rows never record it", (id) => {
    expect(isKmsKeyArn(id)).toBe(false);
  });
});
