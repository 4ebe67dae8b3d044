"""pipeline/evaluation"""
