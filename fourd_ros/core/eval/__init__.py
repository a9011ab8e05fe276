"""fourd_ros.core.eval."""
