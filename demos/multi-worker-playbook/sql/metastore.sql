-- The metastore: a role for DuckLake's catalog connections and the catalog database
-- (the playbook's prerequisite "CREATE DATABASE ducklake_catalog").
-- Run on the first instance as a superuser: psql -v catalog_password=... -f metastore.sql
\set ON_ERROR_STOP on
CREATE ROLE ducklake LOGIN PASSWORD :'catalog_password';
CREATE DATABASE ducklake_catalog OWNER ducklake;
