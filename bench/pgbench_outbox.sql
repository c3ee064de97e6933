-- pgbench script of bench/bench.sh's steady load: one outbox insert per transaction, the same
-- row shape as the backlog (payload about 250 bytes). bench.sh substitutes the table name.
\set n random(1, 1000000000)
INSERT INTO @TABLE@ (aggregate_type, aggregate_id, event_type, payload)
VALUES ('BenchOrder', 'order-' || :n::bigint, 'OrderCreated',
        jsonb_build_object('order_id', :n::bigint, 'customer', 'customer-' || :n::bigint,
                           'note', repeat('x', 180)));
