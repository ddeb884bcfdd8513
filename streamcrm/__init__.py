"""streamcrm: streaming customer scoring on Kafka, Faust, Redis and River."""
