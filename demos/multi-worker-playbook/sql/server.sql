-- One worker instance's view of the shared lake: the FDW server with the playbook's three
-- fields (catalog_connection, catalog_name, data_path) and the catalog role's password in a
-- user mapping (connection strings never hold passwords). Run in the worker's database:
--   psql -v catalog_connection=postgresql://host:port/ducklake_catalog \
--        -v catalog_password=... -v data_path=/shared/lake/ -f server.sql
\set ON_ERROR_STOP on
CREATE EXTENSION IF NOT EXISTS ducklake_fdw;
CREATE SERVER analytics FOREIGN DATA WRAPPER ducklake OPTIONS (
    catalog_connection :'catalog_connection',
    catalog_name       'analytics',
    data_path          :'data_path');
CREATE USER MAPPING FOR CURRENT_USER SERVER analytics
    OPTIONS (user 'ducklake', password :'catalog_password');
CREATE SCHEMA lake;
