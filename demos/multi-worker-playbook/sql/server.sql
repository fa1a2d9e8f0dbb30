-- One worker instance's view of the shared lake: the FDW server with the playbook's three
-- fields (catalog_connection, catalog_name, data_path) and the catalog role's password in a
-- user mapping (connection strings never hold passwords). Run in the worker's database:
--   psql -v catalog_connection=postgresql://host:port/ducklake_catalog \
--        -v catalog_password=... -v data_path=/shared/lake/ -f server.sql
-- For a lake in an object store: -v data_path=s3://bucket/prefix/ -v s3_key_id=... -v s3_secret=...
-- and, for a store other than AWS's, -v s3_endpoint=host:port (plain HTTP, path-style URLs).
-- -v data_inlining_row_limit=0 writes every insert to a Parquet file (the default keeps inserts
-- of up to 10 rows in the catalog).
\set ON_ERROR_STOP on
CREATE EXTENSION IF NOT EXISTS ducklake_fdw;
CREATE SERVER analytics FOREIGN DATA WRAPPER ducklake OPTIONS (
    catalog_connection :'catalog_connection',
    catalog_name       'analytics',
    data_path          :'data_path');
CREATE USER MAPPING FOR CURRENT_USER SERVER analytics
    OPTIONS (user 'ducklake', password :'catalog_password');
CREATE SCHEMA lake;
\if :{?s3_endpoint}
ALTER SERVER analytics OPTIONS (ADD endpoint :'s3_endpoint', ADD url_style 'path', ADD use_ssl 'false');
\endif
\if :{?s3_key_id}
ALTER USER MAPPING FOR CURRENT_USER SERVER analytics
    OPTIONS (ADD key_id :'s3_key_id', ADD secret :'s3_secret');
\endif
\if :{?data_inlining_row_limit}
ALTER SERVER analytics OPTIONS (ADD data_inlining_row_limit :'data_inlining_row_limit');
\endif
