#!/bin/bash
# LocalStack READY hook (mounted into /etc/localstack/init/ready.d/): creates the broker's
# master key and `alias/keybroker`, and the HMAC key that signs audit checkpoints,
# `alias/keybroker-audit-checkpoints` (M1). DEV ONLY.
#
# LocalStack's free edition keeps no state across restarts, so this runs at every start and
# must recreate the *same* key: a fixed key id and fixed key material (LocalStack's
# `_custom_id_` / `_custom_key_material_` tags) keep data keys wrapped before a restart
# decryptable after it. The material below is public (it is in git): anything wrapped by this
# key is readable by anyone with the repository. Never put real secrets into this stack.
set -euo pipefail

KEY_ID="c3a52d8a-5f11-44d7-b661-4ef35b9c52ae"
KEY_MATERIAL="MlA/rDxIl7t/klfak45hoI2sM9a/rusCwEBbgAipoJU="  # 32 bytes, base64: AES-256
ALIAS="alias/keybroker"

if ! awslocal kms describe-key --key-id "$KEY_ID" >/dev/null 2>&1; then
  awslocal kms create-key \
    --description "keybroker master key (LocalStack, DEV ONLY)" \
    --key-usage ENCRYPT_DECRYPT --key-spec SYMMETRIC_DEFAULT \
    --tags "[{\"TagKey\":\"_custom_id_\",\"TagValue\":\"$KEY_ID\"},{\"TagKey\":\"_custom_key_material_\",\"TagValue\":\"$KEY_MATERIAL\"}]" \
    >/dev/null
fi
if ! awslocal kms describe-key --key-id "$ALIAS" >/dev/null 2>&1; then
  awslocal kms create-alias --alias-name "$ALIAS" --target-key-id "$KEY_ID"
fi
# The checkpoint MAC key: HMAC_256, usable only for GenerateMac/VerifyMac. Fixed id and material
# for the same reason as above: checkpoints signed before a restart must verify after it.
MAC_KEY_ID="5b0f3f9e-8c4e-4d8b-9a57-2f1f4c6d7e81"
MAC_KEY_MATERIAL="g1cQmXh3b0bq6rJr1m7l2y3qzq9VZb6x5S8bqv2Yd0c="  # 32 bytes, base64
MAC_ALIAS="alias/keybroker-audit-checkpoints"
if ! awslocal kms describe-key --key-id "$MAC_KEY_ID" >/dev/null 2>&1; then
  awslocal kms create-key \
    --description "keybroker audit checkpoint MAC key (LocalStack, DEV ONLY)" \
    --key-usage GENERATE_VERIFY_MAC --key-spec HMAC_256 \
    --tags "[{\"TagKey\":\"_custom_id_\",\"TagValue\":\"$MAC_KEY_ID\"},{\"TagKey\":\"_custom_key_material_\",\"TagValue\":\"$MAC_KEY_MATERIAL\"}]" \
    >/dev/null
fi
if ! awslocal kms describe-key --key-id "$MAC_ALIAS" >/dev/null 2>&1; then
  awslocal kms create-alias --alias-name "$MAC_ALIAS" --target-key-id "$MAC_KEY_ID"
fi
echo "keybroker dev KMS key ready: $(awslocal kms describe-key --key-id "$ALIAS" --query KeyMetadata.Arn --output text)"
