#!/bin/bash
# LocalStack READY hook (mounted into /etc/localstack/init/ready.d/): creates the broker's
# master key and `alias/keybroker`. DEV ONLY.
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
echo "keybroker dev KMS key ready: $(awslocal kms describe-key --key-id "$ALIAS" --query KeyMetadata.Arn --output text)"
