CREATE TABLE Bid (
  bidtime TIMESTAMP(3),
  price DECIMAL(10, 2),
  item STRING,
  WATERMARK FOR bidtime AS bidtime - INTERVAL '1' SECOND
) WITH ('connector' = 'filesystem', 'path' = 'bid.csv', 'format' = 'csv');
SELECT window_start, window_end, item, SUM(price * 2) AS s, CASE WHEN COUNT(*) > 1 THEN 'a' END AS c
  FROM TABLE(CUMULATE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '2' MINUTES, INTERVAL '10' MINUTES))
  WHERE price > 1 AND item NOT LIKE 'Z%'
  GROUP BY window_start, window_end, item HAVING MAX(price) < 6;
