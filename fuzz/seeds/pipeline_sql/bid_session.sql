CREATE TABLE Bid (
  bidtime TIMESTAMP(3),
  price DECIMAL(10, 2),
  item STRING,
  WATERMARK FOR bidtime AS bidtime - INTERVAL '1' SECOND
) WITH ('connector' = 'filesystem', 'path' = 'bid.csv', 'format' = 'csv');
SELECT TUMBLE_START(bidtime, INTERVAL '10' MINUTE) AS ws, APPROX_PERCENTILE(price, 0.5) AS med
  FROM Bid GROUP BY TUMBLE(bidtime, INTERVAL '10' MINUTE);
