-- The demo's business table. Each order and its OrderCreated outbox row are
-- written in one transaction by scripts/demo.sh. Idempotent.
CREATE TABLE IF NOT EXISTS public.orders (
  id          bigserial PRIMARY KEY,
  customer    text NOT NULL,
  total_cents integer NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now()
);
