"""PyBullet / panda-gym simulation, scripted experts, failure scenarios and data collection (no rclpy)."""
