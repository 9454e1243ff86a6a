DROP TABLE gateway_verification_sends;
DROP TABLE gateway_verifications;
