-- Next-product labels: every order of the last 60 days of the world, with
-- the features as they were one second before it.
SELECT customer_id, ts - 1 AS event_timestamp, product_id AS label
FROM retail_orders
WHERE ts >= (SELECT max(ts) FROM retail_orders) - 60 * 86400
