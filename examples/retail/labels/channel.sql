-- Channel labels: the channel of every message opened in the last 90 days,
-- with the features as they were one second before it was sent.
SELECT customer_id, sent_at - 1 AS event_timestamp, channel AS label
FROM retail_opens
WHERE sent_at >= (SELECT max(sent_at) FROM retail_opens) - 90 * 86400
