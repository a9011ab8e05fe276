"""fourd_ros.core.engine."""
