DROP TABLE gateway_limit_sends;
