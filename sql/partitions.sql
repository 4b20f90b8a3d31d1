-- Partition DDL for webmon.metrics, webmon.errors, webmon.rollups_hourly and
-- webmon.rollups_daily. webmon.run_maintenance() (Rust,
-- partitions.rs) decides which ranges to make or drop and calls these under an advisory lock.
-- Identifiers go through format('%I'); partition bounds cannot be bound parameters in DDL,
-- so the server-computed timestamps are quoted with format('%L').

CREATE FUNCTION webmon.create_partition(parent regclass, range_start timestamptz, range_end timestamptz)
RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    parent_name text := (SELECT relname FROM pg_class WHERE oid = parent);
    -- The partition key: request_timestamp of results, hour or day of rollups.
    key_column name := (SELECT a.attname FROM pg_partitioned_table pt
                        JOIN pg_attribute a ON a.attrelid = pt.partrelid AND a.attnum = pt.partattrs[0]
                        WHERE pt.partrelid = parent);
    partition_name text := parent_name || '_p'
        || to_char(range_start AT TIME ZONE 'UTC', 'YYYYMMDD')
        || CASE WHEN (range_start AT TIME ZONE 'UTC')::time = '00:00' THEN ''
                ELSE to_char(range_start AT TIME ZONE 'UTC', '"T"HH24MI') END;
BEGIN
    EXECUTE format('CREATE TABLE webmon.%I (LIKE webmon.%I INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                   partition_name, parent_name);
    -- Rows that landed in the default partition for this range move into the new one,
    -- so attaching it never fails and no row is lost.
    IF to_regclass(format('webmon.%I', parent_name || '_default')) IS NOT NULL THEN
        EXECUTE format('WITH moved AS (DELETE FROM webmon.%I WHERE %I >= $1 AND %I < $2 RETURNING *)
                        INSERT INTO webmon.%I SELECT * FROM moved',
                       parent_name || '_default', key_column, key_column, partition_name)
            USING range_start, range_end;
    END IF;
    EXECUTE format('CREATE INDEX %I ON webmon.%I (monitor_id, %I)',
                   partition_name || '_monitor_time_idx', partition_name, key_column);
    -- Rollups are also read by time for every monitor (the uptime functions), and written an
    -- hour or a day at a time, in time order: a BRIN index finds a span in a few pages.
    IF key_column <> 'request_timestamp' THEN
        EXECUTE format('CREATE INDEX %I ON webmon.%I USING brin (%I)',
                       partition_name || '_time_idx', partition_name, key_column);
    END IF;
    EXECUTE format('ALTER TABLE webmon.%I ATTACH PARTITION webmon.%I FOR VALUES FROM (%L) TO (%L)',
                   parent_name, partition_name, range_start, range_end);
    -- A row left by a partition dropped by hand is replaced, not a key violation.
    INSERT INTO webmon.partitions AS p (parent, partition, range_start, range_end)
    VALUES (parent, partition_name, range_start, range_end)
    ON CONFLICT ON CONSTRAINT partitions_pkey DO UPDATE
        SET partition = EXCLUDED.partition, range_end = EXCLUDED.range_end;
    RETURN partition_name;
END
$$;
COMMENT ON FUNCTION webmon.create_partition(regclass, timestamptz, timestamptz) IS
    'pg_webmon: make one partition of webmon.metrics, webmon.errors or a rollups table with its (monitor_id, time) index, moving any rows of its range out of the default partition. Called by run_maintenance().';

CREATE FUNCTION webmon.drop_partition(parent regclass, range_start timestamptz)
RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    partition_name text;
BEGIN
    DELETE FROM webmon.partitions p
    WHERE p.parent = drop_partition.parent AND p.range_start = drop_partition.range_start
    RETURNING p.partition INTO partition_name;
    IF partition_name IS NOT NULL THEN
        EXECUTE format('DROP TABLE IF EXISTS webmon.%I', partition_name);
    END IF;
    RETURN partition_name;
END
$$;
COMMENT ON FUNCTION webmon.drop_partition(regclass, timestamptz) IS
    'pg_webmon: drop one partition made by run_maintenance(). Called by run_maintenance() past pg_webmon.retention.';

CREATE FUNCTION webmon.purge_default_partition(parent regclass, older_than timestamptz,
                                               max_rows int DEFAULT 10000)
RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    purged bigint;
BEGIN
    -- In batches: a default partition that filled up (a database made by 0.1.0 after its
    -- partitions stopped being made) is purged a batch per call, never in one long statement.
    EXECUTE format('DELETE FROM webmon.%1$I WHERE ctid = ANY (ARRAY(
                        SELECT ctid FROM webmon.%1$I WHERE %2$I < $1 LIMIT $2))',
                   (SELECT relname FROM pg_class WHERE oid = parent) || '_default',
                   (SELECT a.attname FROM pg_partitioned_table pt
                    JOIN pg_attribute a ON a.attrelid = pt.partrelid AND a.attnum = pt.partattrs[0]
                    WHERE pt.partrelid = parent))
        USING older_than, max_rows;
    GET DIAGNOSTICS purged = ROW_COUNT;
    RETURN purged;
END
$$;
COMMENT ON FUNCTION webmon.purge_default_partition(regclass, timestamptz, int) IS
    'pg_webmon: delete at most max_rows rows past retention from the default partition; returns how many (call again while it returns max_rows). Called by run_maintenance().';

REVOKE ALL ON FUNCTION webmon.create_partition(regclass, timestamptz, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION webmon.drop_partition(regclass, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION webmon.purge_default_partition(regclass, timestamptz, int) FROM PUBLIC;
