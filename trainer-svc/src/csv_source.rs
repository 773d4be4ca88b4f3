//! Reading `user_id,item_id,topic,correct,seconds,ts` CSV files (plain or gzip).
