"""Test isolation: every pytest session gets its own ROS domain on localhost, so parallel runs never cross-talk."""
import os
import random

os.environ['ROS_DOMAIN_ID'] = str(random.SystemRandom().randint(1, 100))
os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')
os.environ.setdefault('OMP_NUM_THREADS', '1')

REDUCED = os.environ.get('FLOW_RAG_VLA_CI_REDUCED') == '1'
