-- The catalog's own database and role, beside Temporal's.
CREATE ROLE caged LOGIN PASSWORD 'caged';
CREATE DATABASE caged OWNER caged;
