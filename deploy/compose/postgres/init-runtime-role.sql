-- Postgres image init hook (/docker-entrypoint-initdb.d/, first start of an empty volume only):
-- the role `keybroker serve` connects as (review M1). It owns nothing: `keybroker migrate` runs
-- as the owner (POSTGRES_USER) and grants it what it needs, INSERT/SELECT only on the audit
-- tables, so the broker cannot truncate, edit or unprotect its own trail. DEV ONLY password.
create role keybroker_runtime login password 'keybroker-runtime-dev-only';
