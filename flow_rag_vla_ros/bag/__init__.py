"""rosbag2 recording (rclpy, raw subscriptions, `rosbags` writer) and reading (validated, clear errors)."""
