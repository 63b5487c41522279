"""``ports.Ec2`` implemented with boto3: the client, its error translation, waits and session."""
