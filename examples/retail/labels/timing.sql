-- Timing labels: right after each order of the last 90 days, the days
-- until the customer's next order (the last order of each customer has
-- no label and is left out).
SELECT customer_id, t AS event_timestamp, (next - t) / 86400 AS label
FROM (SELECT customer_id, arraySort(groupArray(ts)) AS times FROM retail_orders GROUP BY customer_id)
ARRAY JOIN times AS t, arrayPushBack(arraySlice(times, 2), toDateTime(0)) AS next
WHERE next > t AND t >= (SELECT max(ts) FROM retail_orders) - 90 * 86400
